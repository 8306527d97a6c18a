import { expect, galata, test } from '@jupyterlab/galata';
import type { Locator, Page } from '@playwright/test';

/** The sidebar against a real JupyterLab and a real engine: cells run, nodes follow, details and actions work. */

const SIDEBAR = '#hetflow-sidebar';

async function openSidebar(page: Page): Promise<Locator> {
  const panel = page.locator(SIDEBAR);
  if (!(await panel.isVisible())) {
    await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="hetflow-sidebar"]').click();
  }
  await expect(panel).toBeVisible();
  await expect(panel.getByText('● live')).toBeVisible();
  return panel;
}

function node(page: Page, name: string): Locator {
  return page.locator(`${SIDEBAR} .hetflow-node`, { has: page.locator('.hetflow-node-name', { hasText: new RegExp(`^${name}$`) }) });
}

async function notebookWith(page: Page, name: string, cells: string[]): Promise<void> {
  await page.notebook.createNew(name);
  await page.notebook.setCell(0, 'code', '%load_ext hetflow');
  for (const source of cells) {
    await page.notebook.addCell('code', source);
  }
  await page.notebook.runCell(0);
}

async function shot(page: Page, testInfo: { outputPath: (name: string) => string; attach: Function }, name: string) {
  const path = testInfo.outputPath(`${name}.png`);
  await page.screenshot({ path });
  await testInfo.attach(name, { path, contentType: 'image/png' });
}

test.describe.configure({ mode: 'serial' });

test('a remote cell appears as a node and turns completed', async ({ page }, testInfo) => {
  await notebookWith(page, 'graph.ipynb', ['%%remote name=hello\nanswer = 6 * 7\nanswer']);
  const panel = await openSidebar(page);
  await page.notebook.runCell(1);
  await expect(node(page, 'hello')).toHaveAttribute('data-state', 'completed');
  expect(await page.notebook.getCellTextOutput(1)).toEqual(['42']);
  await node(page, 'hello').click();
  await expect(panel.getByTestId('hetflow-details')).toContainText('local');
  await shot(page, testInfo, 'sidebar-completed');
});

test('a failing cell turns its node failed and the details show the traceback', async ({ page }, testInfo) => {
  await notebookWith(page, 'failing.ipynb', ["%%remote name=broken\nx = 1\nraise ValueError('boom')"]);
  const panel = await openSidebar(page);
  await page.notebook.runCell(1);
  await expect(node(page, 'broken')).toHaveAttribute('data-state', 'failed');
  await node(page, 'broken').click();
  const error = panel.getByTestId('hetflow-error');
  await expect(error).toContainText("ValueError: boom");
  await expect(error).toContainText('line 3');
  await shot(page, testInfo, 'sidebar-failed');
});

test('a long task streams its log lines live into the details pane', async ({ page }, testInfo) => {
  await notebookWith(page, 'talker.ipynb', [
    "%%remote name=talker cache=false\nimport time\nfor i in range(10):\n    print('line', i, flush=True)\n    time.sleep(0.5)"
  ]);
  const panel = await openSidebar(page);
  const run = page.notebook.runCell(1);
  await expect(node(page, 'talker')).toHaveAttribute('data-state', 'running');
  await node(page, 'talker').click();
  const log = panel.getByTestId('hetflow-log');
  await expect(log).toContainText('line 2');
  await expect(node(page, 'talker')).toHaveAttribute('data-state', 'running'); // still running: it streamed
  await shot(page, testInfo, 'sidebar-live-log');
  await run;
  await expect(log).toContainText('line 9');
  await expect(node(page, 'talker')).toHaveAttribute('data-state', 'completed');
});

test('cancel from the sidebar cancels the task', async ({ page }, testInfo) => {
  await notebookWith(page, 'cancel.ipynb', ['%%remote name=sleeper cache=false\nimport time\ntime.sleep(120)']);
  const panel = await openSidebar(page);
  const run = page.notebook.runCell(1);
  await expect(node(page, 'sleeper')).toHaveAttribute('data-state', 'running');
  await node(page, 'sleeper').click();
  await panel.getByRole('button', { name: 'cancel task' }).click();
  await expect(node(page, 'sleeper')).toHaveAttribute('data-state', 'cancelled');
  await run;
  const output = (await page.notebook.getCellTextOutput(1))?.join('\n') ?? '';
  expect(output).toContain('cancelled');
  await shot(page, testInfo, 'sidebar-cancelled');
});

test('the cell status line cancels its task while the kernel waits', async ({ page }) => {
  await notebookWith(page, 'status.ipynb', ['%%remote name=waiter cache=false\nimport time\ntime.sleep(120)']);
  const run = page.notebook.runCell(1);
  const status = page.getByTestId('hetflow-status');
  await expect(status).toHaveAttribute('data-state', 'running');
  await status.getByRole('button', { name: 'cancel task waiter' }).click();
  await expect(status).toHaveAttribute('data-state', 'cancelled');
  await run;
});

test('a credential added in the sidebar is listed by name and never shown back', async ({ page }, testInfo) => {
  const secret = 'SuperSecretValue-9f8e7d';
  await page.goto();
  const panel = await openSidebar(page);
  await panel.getByRole('tab', { name: 'credentials' }).click();
  await panel.getByLabel('credential name').fill('ui-token');
  await panel.getByLabel('credential kind').selectOption('token');
  await panel.getByLabel('token', { exact: true }).fill(secret);
  await panel.getByRole('button', { name: 'save credential' }).click();
  await expect(panel.locator('[data-credential="ui-token"]')).toContainText('token');
  await expect(panel.getByLabel('token', { exact: true })).toHaveValue('');
  const listed = await page.evaluate(async () => (await fetch('/hetflow/api/credentials')).text());
  expect(listed).toContain('ui-token');
  expect(listed).not.toContain(secret);
  expect(await page.content()).not.toContain(secret);
  await shot(page, testInfo, 'sidebar-credentials');
});

test('go to cell opens the notebook and scrolls to the cell', async ({ page }) => {
  const filler = Array.from({ length: 8 }, (_, i) => `# filler ${i}` + '\n'.repeat(12) + `filler_${i} = ${i}`);
  await notebookWith(page, 'far.ipynb', [...filler, '%%remote name=faraway\nfar = 1']);
  const last = filler.length + 1;
  await page.notebook.runCell(last);
  const panel = await openSidebar(page);
  await expect(node(page, 'faraway')).toHaveAttribute('data-state', 'completed');
  await page.notebook.selectCells(0);
  const target = page.notebook.getCellLocator(last);
  await page.locator('.jp-WindowedPanel-outer').first().evaluate(el => el.scrollTo(0, 0));
  await expect(await target).not.toBeInViewport();
  await node(page, 'faraway').click();
  await panel.getByRole('button', { name: 'go to cell' }).click();
  const cell = await page.notebook.getCellLocator(last);
  await expect(cell).toBeInViewport();
  await expect(cell!).toHaveClass(/jp-mod-active/);
});

test('a thousand tasks render fast and a live update is quick', async ({ page }, testInfo) => {
  test.setTimeout(240_000);
  await notebookWith(page, 'bulk.ipynb', [
    "for i in range(1000):\n    get_ipython().run_cell_magic('remote', f'name=bulk{i} cache=false', f'v = {i}')"
  ]);
  // the store is the whole UI run's: what was there before the thousand (limit=0: every task)
  const before = ((await (await page.request.get('/hetflow/api/tasks?limit=0')).json()) as { tasks: unknown[] }).tasks
    .length;
  await page.notebook.runCell(1);
  // a second, fresh Lab page: its sidebar renders the thousand tasks from scratch
  const fresh = await page.context().newPage();
  // note when each event socket message arrives, to time the update from the message to the DOM
  await fresh.addInitScript(() => {
    const arrivals: Array<{ time: number; data: string }> = [];
    (window as unknown as { hetflowArrivals: typeof arrivals }).hetflowArrivals = arrivals;
    const descriptor = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage')!;
    Object.defineProperty(WebSocket.prototype, 'onmessage', {
      set(handler: (event: MessageEvent) => void) {
        descriptor.set!.call(this, (event: MessageEvent) => {
          arrivals.push({ time: performance.now(), data: String(event.data) });
          handler(event);
        });
      },
      get() {
        return descriptor.get!.call(this);
      }
    });
  });
  await fresh.goto('/lab');
  const tab = fresh.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="hetflow-sidebar"]');
  await tab.waitFor();
  const start = await fresh.evaluate(() => performance.now());
  await tab.click();
  // the server answers with the newest 1000: the thousand just run
  await expect(fresh.getByTestId('hetflow-count')).toHaveText('1000 tasks');
  await expect(fresh.locator(`${SIDEBAR} .hetflow-node`).first()).toBeVisible();
  const firstRender = (await fresh.evaluate(() => performance.now())) - start;
  const visible = fresh.locator(`${SIDEBAR} .hetflow-node[data-state="completed"]`).first();
  const id = await visible.getAttribute('data-task');
  const [roundTrip, update] = await fresh.evaluate(async taskId => {
    const element = document.querySelector(`#hetflow-sidebar .hetflow-node[data-task="${taskId}"]`)!;
    const changed = new Promise<number>(resolve => {
      new MutationObserver(() => {
        if (element.getAttribute('data-state') !== 'completed') {
          resolve(performance.now());
        }
      }).observe(element, { attributes: true });
    });
    const sent = performance.now();
    await fetch(`/hetflow/api/tasks/${taskId}/rerun`, { method: 'POST' });
    const shown = await changed;
    const arrivals = (window as unknown as { hetflowArrivals: Array<{ time: number; data: string }> }).hetflowArrivals;
    const arrived = arrivals.find(a => a.time >= sent && a.data.includes(`"task": "${taskId}"`))!.time;
    return [shown - sent, shown - arrived];
  }, id);
  const report =
    `first render of 1000 tasks: ${firstRender.toFixed(0)} ms; one live update, event message to node: ` +
    `${update.toFixed(1)} ms (rerun request to node: ${roundTrip.toFixed(0)} ms)`;
  console.log(report);
  await testInfo.attach('performance', { body: report, contentType: 'text/plain' });
  await shot(fresh, testInfo, 'sidebar-1000-tasks');
  expect(firstRender).toBeLessThan(1000); // the goal
  // the goal is 50 ms; a node follows its own task in about 2 ms, and redrawing the whole graph took 48-80 ms
  expect(update).toBeLessThan(25);
  // the tasks from before the thousand are a page away
  const older = fresh.locator(SIDEBAR).getByRole('button', { name: 'load older' });
  await expect(older).toHaveCount(before > 0 ? 1 : 0);
  if (before > 0) {
    await older.click();
    await expect(fresh.getByTestId('hetflow-count')).toHaveText(`${1000 + Math.min(before, 1000)} tasks`);
  }
});

void galata;
