import { expect, test } from '@jupyterlab/galata';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/** A host that asks for a one-time code at login (the MFA sshd of scripts/services.sh): the question appears as a
 * dialog in JupyterLab, the code typed there lets the task run, and the dialog does not come back for the next. */

const { readEnv } = require('../envfile') as { readEnv: (file: string) => Record<string, string> | null };

const ENV_FILE = path.join(process.env.HETFLOW_SERVICES ?? '/tmp/hetflow-services', 'env.sh');
const env = readEnv(ENV_FILE);
if (!env && process.env.HETFLOW_REQUIRE_SERVICES === '1') {
  throw new Error(`HETFLOW_REQUIRE_SERVICES=1 but ${ENV_FILE} is missing: run scripts/services.sh up`);
}
test.skip(!env, `no ${ENV_FILE}: run scripts/services.sh up (as root) to start the MFA sshd`);

function totp(): string {
  const secret = fs.readFileSync(env!.HETFLOW_MFA_SECRET_FILE, 'utf-8').trim();
  return execFileSync('oathtool', ['--totp', '-b', secret], { encoding: 'utf-8' }).trim();
}

test('a login question is answered in a dialog and the task runs', async ({ page }) => {
  const key = fs.readFileSync(env!.HETFLOW_SSH_KEY, 'utf-8');
  const put = await page.request.put('/hetflow/api/credentials/mfa-key', {
    data: { kind: 'ssh-key', fields: { private_key: key } }
  });
  expect(put.status()).toBe(200);

  await page.notebook.createNew('mfa.ipynb');
  await page.notebook.setCell(0, 'code', '%load_ext hetflow');
  await page.notebook.addCell('code', "%%remote executor=mfa name=behind_mfa cache=false\nwhere = 'past the code'\nwhere");
  await page.notebook.addCell('code', "%%remote executor=mfa name=again cache=false\n'no second question'");
  await page.notebook.runCell(0);
  const run = page.notebook.runCell(1);

  const dialog = page.locator('.jp-Dialog', { hasText: 'Verification code' });
  await expect(dialog).toBeVisible({ timeout: 30000 });
  await expect(dialog).toContainText('executor mfa');
  const input = dialog.getByLabel('Verification code:');
  await expect(input).toHaveAttribute('type', 'password');
  await input.fill(totp());
  await dialog.getByRole('button', { name: 'Send' }).click();
  await run;
  const output = (await page.notebook.getCellTextOutput(1)) ?? [];
  expect(output).toContain("'past the code'");
  expect(output.join('')).toContain("asks at login: Verification code: — answer it in hetflow's dialog in JupyterLab");
  await expect(dialog).toHaveCount(0);

  await page.notebook.runCell(2);
  expect(await page.notebook.getCellTextOutput(2)).toContain("'no second question'");
  await expect(page.locator('.jp-Dialog')).toHaveCount(0);
});
