import { expect, test } from '@jupyterlab/galata';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/** A warm Slurm allocation (keep_alive=60 on the services' cluster) shows in the sidebar's executor panel with its
 * job id and node, and its Cancel button takes the job out of squeue. */

const { readEnv } = require('../envfile') as { readEnv: (file: string) => Record<string, string> | null };

const ENV_FILE = path.join(process.env.HETFLOW_SERVICES ?? '/tmp/hetflow-services', 'env.sh');
const env = readEnv(ENV_FILE);
if (!env && process.env.HETFLOW_REQUIRE_SERVICES === '1') {
  throw new Error(`HETFLOW_REQUIRE_SERVICES=1 but ${ENV_FILE} is missing: run scripts/services.sh up`);
}
test.skip(!env, `no ${ENV_FILE}: run scripts/services.sh up (as root) to start Slurm and sshd`);

function squeue(): string {
  return execFileSync('squeue', ['-h', '-o', '%i'], { encoding: 'utf-8', env: { ...process.env, SLURM_CONF: env!.SLURM_CONF } });
}

test('a warm allocation is listed in the executor panel and cancelled from it', async ({ page }) => {
  const key = fs.readFileSync(env!.HETFLOW_SSH_KEY, 'utf-8');
  const put = await page.request.put('/hetflow/api/credentials/cluster-key', {
    data: { kind: 'ssh-key', fields: { private_key: key } }
  });
  expect(put.status()).toBe(200);

  await page.notebook.createNew('warm.ipynb');
  await page.notebook.setCell(0, 'code', '%load_ext hetflow');
  await page.notebook.addCell('code', "%%remote executor=cluster cache=false\nimport os\nos.environ['SLURM_JOB_ID']");
  await page.notebook.runCell(0);
  await page.notebook.runCell(1);
  const job = ((await page.notebook.getCellTextOutput(1)) ?? []).join('').match(/'(\d+)'/)?.[1];
  expect(job).toBeTruthy();
  expect(squeue()).toContain(job);

  await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="hetflow-sidebar"]').click();
  await page.locator('#hetflow-sidebar').getByRole('tab', { name: 'executors' }).click();
  const row = page.locator(`[data-allocation="${job}"]`);
  await expect(row).toBeVisible({ timeout: 10000 });
  await expect(row).toContainText('vm');
  await expect(row).toContainText('0/1');

  await row.getByRole('button', { name: `cancel allocation ${job}` }).click();
  await expect(row).toHaveCount(0);
  await expect.poll(() => squeue().split('\n').includes(job!), { timeout: 15000 }).toBe(false);
});
