// jest's babel-jest turns the ES-module packages of node_modules (see jest.config.js) into CommonJS
module.exports = require('@jupyterlab/testutils/lib/babel.config');
