/**
 * Galata (Playwright for JupyterLab) against `jupyter lab --config jupyter_server_test_config.py` on
 * 127.0.0.1:8888, in Debian's Chromium (/usr/bin/chromium; Playwright cannot download browsers here).
 * The repo's venv (../.venv) provides `jupyter` when it exists; otherwise `jupyter` from PATH.
 * Screenshots, failure traces and the HTML report go to test-results/ and playwright-report/ (gitignored).
 */
const fs = require('fs');
const path = require('path');

const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const venvJupyter = path.resolve(__dirname, '..', process.env.VENV || '.venv', 'bin', 'jupyter');
const jupyter = fs.existsSync(venvJupyter) ? venvJupyter : 'jupyter';

module.exports = {
  ...baseConfig,
  testDir: 'tests', // hub/ has the specs that run under JupyterHub (playwright.hub.config.js)
  outputDir: 'test-results',
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report' }]],
  retries: process.env.CI ? 1 : 0,
  use: {
    ...baseConfig.use,
    baseURL: 'http://127.0.0.1:8888',
    video: 'off',
    trace: 'off',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--headless',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--disable-sync'
      ]
    }
  },
  webServer: {
    command: `"${jupyter}" lab --config jupyter_server_test_config.py`,
    url: 'http://127.0.0.1:8888/lab',
    timeout: 120 * 1000,
    // a server already on 8888 is not ours (other config, other store): refuse it unless asked
    reuseExistingServer: process.env.PW_REUSE_SERVER === '1',
    stdout: 'pipe',
    stderr: 'pipe'
  }
};
