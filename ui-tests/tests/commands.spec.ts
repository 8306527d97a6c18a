import { expect, test } from '@jupyterlab/galata';
import type { Page, Request } from '@playwright/test';

/** hetflow's JupyterLab commands in a real JupyterLab: the graph opens in a main-area tab, a click there selects a
 * task the commands act on, and on reload the layout restorer brings back the tab, the sidebar and the selection. */

const SIDEBAR = '#hetflow-sidebar';
const GRAPH = '#hetflow-graph';

async function execute(page: Page, command: string): Promise<void> {
  await page.evaluate(async id => {
    await window.jupyterapp.commands.execute(id); // open-graph resolves to its widget: not sent back
  }, command);
}

async function enabled(page: Page, commands: string[]): Promise<string[]> {
  return page.evaluate(ids => ids.filter(id => window.jupyterapp.commands.isEnabled(id)), commands);
}

/** The workspace JupyterLab saves (Galata keeps it in memory for the test, across reloads), once it holds `key`. */
function savedWith(page: Page, key: string, value: unknown): Promise<Request> {
  return page.waitForRequest(request => {
    if (request.method() !== 'PUT' || !/\/api\/workspaces\//.test(request.url())) {
      return false;
    }
    return request.postDataJSON()?.data?.[key] === value;
  });
}

const TASK_COMMANDS = ['hetflow:cancel-task', 'hetflow:retry-task', 'hetflow:rerun-task'];

test('the commands open the graph tab, act on the selected task, and the layout comes back on reload', async ({
  page
}, testInfo) => {
  await page.notebook.createNew('commands.ipynb');
  await page.notebook.setCell(0, 'code', '%load_ext hetflow');
  await page.notebook.addCell('code', '%%remote name=napper cache=false wait=false\nimport time\ntime.sleep(120)');
  await page.notebook.runCell(0);
  await page.notebook.runCell(1);

  await execute(page, 'hetflow:open-sidebar');
  await expect(page.locator(SIDEBAR)).toBeVisible();
  expect(await enabled(page, TASK_COMMANDS)).toEqual([]); // nothing selected

  await execute(page, 'hetflow:open-graph');
  const graph = page.locator(GRAPH);
  await expect(graph).toBeVisible();
  await expect(page.locator('.jp-MainAreaWidget .lm-TabBar-tab, .lm-DockPanel-tabBar .lm-TabBar-tab', { hasText: 'hetflow graph' }).first()).toBeVisible();
  const napper = graph.locator('.hetflow-node', { hasText: 'napper' });
  await expect(napper).toHaveAttribute('data-state', 'running');
  const id = await napper.getAttribute('data-task');

  // a click in the graph tab selects the task everywhere: the sidebar's details, the commands
  const saved = savedWith(page, 'hetflow:selection', id);
  await napper.click();
  await expect(graph.getByTestId('hetflow-graph-selection')).toHaveText('selected: napper (running)');
  await expect(page.locator(SIDEBAR).getByTestId('hetflow-details')).toContainText('napper');
  expect(await enabled(page, TASK_COMMANDS)).toEqual(['hetflow:cancel-task']);

  // the graph tab's toolbar runs the commands on the selected task, enabled by its state
  const button = (label: string) => graph.locator(`.jp-Toolbar .jp-ToolbarButtonComponent[aria-label="${label}"]`);
  await expect(button('Retry')).toHaveAttribute('aria-disabled', 'true');
  await button('Cancel').click();
  await expect(napper).toHaveAttribute('data-state', 'cancelled');
  await expect(button('Cancel')).toHaveAttribute('aria-disabled', 'true');
  await expect(button('Retry')).toHaveAttribute('aria-disabled', 'false');
  expect(await enabled(page, TASK_COMMANDS)).toEqual(['hetflow:retry-task', 'hetflow:rerun-task']);
  await saved;
  await page.notebook.close(); // (else its restored kernel asks which kernel to start)

  // Galata's default wait for the Launcher does not apply: the restored layout has none
  await page.reload({ waitForIsReady: false });
  // the graph tab is back, the sidebar is open again, and the same task is selected
  await expect(graph).toBeVisible();
  await expect(napper).toHaveAttribute('data-state', 'cancelled');
  await expect(napper).toHaveClass(/hetflow-selected/);
  await expect(page.locator(SIDEBAR)).toBeVisible();
  await expect(page.locator(SIDEBAR).getByTestId('hetflow-details')).toContainText('napper');
  expect(await enabled(page, TASK_COMMANDS)).toEqual(['hetflow:retry-task', 'hetflow:rerun-task']);

  const path = testInfo.outputPath('graph-tab-restored.png');
  await page.screenshot({ path });
  await testInfo.attach('graph-tab-restored', { path, contentType: 'image/png' });
});

test('the commands are in the command palette under hetflow', async ({ page }) => {
  await execute(page, 'apputils:activate-command-palette');
  const palette = page.locator('#command-palette');
  await palette.locator('.lm-CommandPalette-input').fill('hetflow');
  const item = (command: string) => palette.locator(`.lm-CommandPalette-item[data-command="${command}"]`);
  await expect(item('hetflow:open-sidebar')).toBeVisible();
  await expect(item('hetflow:open-graph')).toBeVisible();
  for (const command of TASK_COMMANDS) {
    // listed; JupyterLab hides a disabled command's item, and no task is selected
    await expect(item(command)).toHaveClass(/lm-mod-disabled/);
  }
  // the category header is rendered (JupyterLab's modal palette shows no headers while searching)
  await expect(palette.locator('.lm-CommandPalette-header', { hasText: /^hetflow$/ })).toBeAttached();
  await palette.locator('.lm-CommandPalette-item', { hasText: 'Open the hetflow Graph' }).click();
  await expect(page.locator(GRAPH)).toBeVisible();
});
