import { expect, test } from '@jupyterlab/galata';

/** The id and title the sidebar registers with (labextension/src/index.ts). */
const SIDEBAR_ID = 'hetflow-sidebar';
const SIDEBAR_TITLE = 'hetflow';

// load JupyterLab inside the test, so that errors during the plugins' activation are caught too
test.use({ autoGoto: false });

test('the hetflow sidebar opens from its tab in the left bar', async ({ page }, testInfo) => {
  const errors: string[] = [];
  page.on('pageerror', error => errors.push(String(error)));
  page.on('console', message => {
    if (message.type() === 'error' && /hetflow/i.test(message.text())) {
      errors.push(message.text());
    }
  });

  await page.goto();

  // the tab: Lumino gives each side-bar tab data-id = the widget's id; its title is the tab's tooltip
  const tab = page.locator(`.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="${SIDEBAR_ID}"]`);
  await expect(tab).toBeVisible();
  await expect(tab).toHaveAttribute('title', new RegExp(SIDEBAR_TITLE, 'i'));

  await tab.click();

  const panel = page.locator(`#${SIDEBAR_ID}`);
  await expect(panel).toBeVisible();
  await expect(tab).toHaveClass(/lm-mod-current/);

  const screenshot = testInfo.outputPath('sidebar.png');
  await page.screenshot({ path: screenshot });
  await testInfo.attach('sidebar', { path: screenshot, contentType: 'image/png' });

  expect(errors).toEqual([]);
});
