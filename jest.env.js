/*
 * The unit tests' DOM: JupyterLab's jsdom environment, plus browser globals that jsdom lacks and the sidebar's
 * libraries use (@dagrejs/dagre calls structuredClone). Taken from Node, as JupyterLab's does for fetch.
 */
const JupyterLabEnvironment = require('@jupyterlab/testing/lib/jest-env').default;

class HetflowEnvironment extends JupyterLabEnvironment {
  constructor(...args) {
    super(...args);
    if (typeof this.global.structuredClone !== 'function') {
      this.global.structuredClone = structuredClone;
    }
  }
}

module.exports = HetflowEnvironment;
