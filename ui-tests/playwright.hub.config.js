/**
 * The hetflow sidebar under a real JupyterHub (`scripts/hub.sh up`; `make ui-tests` starts it): specs in hub/, run
 * with `jlpm playwright test --config playwright.hub.config.js`. No webServer: the hub is already up, and its env
 * file ($HETFLOW_HUB/env.sh, default /tmp/hetflow-hub) gives its URL and the users' password file. The users' servers
 * load Galata's lab extension and expose the app (scripts/jupyterhub_config.py), so Galata's helpers work there.
 */
const fs = require('fs');
const path = require('path');

const { readEnv } = require('./envfile');
const base = require('./playwright.config');

function hubEnv() {
  const file = path.join(process.env.HETFLOW_HUB || '/tmp/hetflow-hub', 'env.sh');
  const env = readEnv(file);
  if (!env) {
    throw new Error(`no ${file}: start the JupyterHub first (bash scripts/hub.sh up, or make ui-tests)`);
  }
  return env;
}

const hub = hubEnv();
const user = 'alice';

module.exports = {
  ...base,
  testDir: 'hub',
  outputDir: 'test-results/hub',
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report/hub' }]],
  webServer: undefined,
  use: {
    ...base.use,
    // Galata opens `${baseURL}/lab`: the user's server behind the hub's proxy
    baseURL: `${hub.HUB_URL}/user/${user}`,
    hubURL: hub.HUB_URL,
    hubUser: user,
    hubPassword: fs.readFileSync(hub.HUB_PASSWORD_FILE, 'utf8').trim(),
    // the CI service's token: the test stops the user's server first, so that logging in spawns it anew
    hubAdminToken: fs.readFileSync(hub.HUB_ADMIN_TOKEN_FILE, 'utf8').trim()
  }
};
