import { expect, test as base } from '@jupyterlab/galata';
import type { APIRequestContext, Page } from '@playwright/test';

/**
 * The sidebar at an HPC center: a user logs in through JupyterHub's form, JupyterLab opens on their own server
 * behind the hub's proxy, and a `%%remote` cell's task shows up in the sidebar's graph and turns completed, live
 * over the event WebSocket under the hub's authentication.
 */

type HubOptions = { hubURL: string; hubUser: string; hubPassword: string; hubAdminToken: string };

const test = base.extend<HubOptions>({
  hubURL: ['', { option: true }],
  hubUser: ['alice', { option: true }],
  hubPassword: ['', { option: true }],
  hubAdminToken: ['', { option: true }],
  // Galata makes a test folder through `/api/contents` at the site's root, which under a hub is not the user's
  // server: the notebook goes to the user's home instead, under a name of its own
  tmpPath: async ({}, use) => {
    await use('');
  }
});

// the hub's login form and the spawn come first; Galata loads Lab afterwards
test.use({ autoGoto: false });

const SIDEBAR = '#hetflow-sidebar';

function admin(token: string): { headers: Record<string, string> } {
  return { headers: { Authorization: `token ${token}` } };
}

/** Stop the user's server (one left from an earlier run has older code), so that it starts afresh. */
async function stopServer(request: APIRequestContext, hubURL: string, user: string, token: string): Promise<void> {
  const stopped = await request.delete(`${hubURL}/hub/api/users/${user}/server`, admin(token));
  expect([202, 204]).toContain(stopped.status());
  await expect
    .poll(async () => Object.keys((await (await request.get(`${hubURL}/hub/api/users/${user}`, admin(token))).json()).servers), {
      timeout: 60_000
    })
    .toEqual([]);
}

/**
 * Log in through the hub's form (its _xsrf cookie, then the POST) with the browser context's own cookie jar, start
 * the user's server and wait until it is ready; Lab then opens in the test's one page, through the hub's OAuth.
 * (Typing into the form in a second page, which then loaded a Lab of its own, once held up this page's navigation
 * for minutes.)
 */
async function logIn(page: Page, hubURL: string, user: string, password: string, token: string): Promise<void> {
  const browser = page.context().request;
  expect((await browser.get(`${hubURL}/hub/login`)).ok()).toBe(true);
  const xsrf = (await page.context().cookies(`${hubURL}/hub/`)).find(c => c.name === '_xsrf')?.value;
  expect(xsrf).toBeTruthy();
  const login = await browser.post(`${hubURL}/hub/login?next=`, {
    form: { username: user, password, _xsrf: xsrf! },
    maxRedirects: 0
  });
  expect(login.status()).toBe(302);
  const started = await browser.post(`${hubURL}/hub/api/users/${user}/server`, admin(token));
  expect([201, 202]).toContain(started.status());
  await expect
    .poll(async () => (await (await browser.get(`${hubURL}/hub/api/users/${user}`, admin(token))).json()).servers['']?.ready, {
      timeout: 90_000
    })
    .toBe(true);
}

test('under JupyterHub, a remote cell appears in the sidebar graph and turns completed', async ({
  page,
  request,
  hubURL,
  hubUser,
  hubPassword,
  hubAdminToken
}, testInfo) => {
  test.setTimeout(180_000);
  await stopServer(request, hubURL, hubUser, hubAdminToken);
  await logIn(page, hubURL, hubUser, hubPassword, hubAdminToken);
  await page.goto();
  expect(page.url()).toContain(`/user/${hubUser}/lab`);

  await page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="hetflow-sidebar"]').click();
  const panel = page.locator(SIDEBAR);
  await expect(panel).toBeVisible();
  await expect(panel.getByText('● live')).toBeVisible(); // the event socket is open through the proxy

  const stamp = Date.now().toString(36);
  const name = `hub_${stamp}`;
  const notebook = `hub-ui-${stamp}.ipynb`;
  await page.notebook.createNew(notebook);
  await page.notebook.setCell(0, 'code', '%load_ext hetflow');
  await page.notebook.addCell('code', `%%remote name=${name} cache=false\nimport os\nwho = os.environ['JUPYTERHUB_USER']\nwho`);
  await page.notebook.runCell(0);
  await page.notebook.runCell(1);

  const node = panel.locator('.hetflow-node', {
    has: page.locator('.hetflow-node-name', { hasText: new RegExp(`^${name}$`) })
  });
  await expect(node).toHaveAttribute('data-state', 'completed');
  expect(await page.notebook.getCellTextOutput(1)).toEqual([`'${hubUser}'`]);
  await node.click();
  await expect(panel.getByTestId('hetflow-details')).toContainText('center-local'); // the site's executor

  const shot = testInfo.outputPath('hub-sidebar.png');
  await page.screenshot({ path: shot });
  await testInfo.attach('hub-sidebar', { path: shot, contentType: 'image/png' });

  // Galata's own clean-up speaks to the site's root, not the user's server: close the kernel and the file here
  await page.notebook.close(false);
  await page.evaluate(async path => {
    const app = (window as any).jupyterapp;
    const session = await app.serviceManager.sessions.findByPath(path);
    if (session) {
      await app.serviceManager.sessions.shutdown(session.id);
    }
    await app.serviceManager.contents.delete(path);
  }, notebook);
});
