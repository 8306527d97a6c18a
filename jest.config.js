/*
 * Unit tests of the sidebar: `jlpm test` runs every labextension/src/**\/*.spec.ts(x), in jsdom, through ts-jest
 * (type-checked against tsconfig.json's compiler options). Based on JupyterLab's own jest config, so @jupyterlab/*
 * packages (ES modules) can be imported in tests.
 */
const jestJupyterLab = require('@jupyterlab/testutils/lib/jest-config');
const { compilerOptions } = require('./tsconfig.json');

// packages shipped as ES modules, which babel turns into CommonJS for jest
const esModules = [
  '@codemirror',
  '@jupyter/ydoc',
  '@jupyter/react-components',
  '@jupyter/web-components',
  '@jupyterlab/',
  '@microsoft',
  'exenv-es6',
  'lib0',
  'marked',
  'nanoid',
  'vscode-ws-jsonrpc',
  'y-protocols',
  'y-websocket',
  'yjs'
].join('|');

const baseConfig = jestJupyterLab(__dirname);

module.exports = {
  ...baseConfig,
  automock: false,
  roots: ['<rootDir>/labextension/src'],
  testEnvironment: '<rootDir>/jest.env.js',
  testRegex: '\\.spec\\.tsx?$',
  testPathIgnorePatterns: ['/node_modules/', '/lib/', '/ui-tests/'],
  // jest-junit writes junit.xml (gitignored); no GitHub annotations here
  reporters: ['default'],
  collectCoverageFrom: ['labextension/src/**/*.{ts,tsx}', '!labextension/src/**/*.d.ts', '!labextension/src/**/__tests__/**'],
  coverageReporters: ['lcov', 'text-summary'],
  transform: {
    ...baseConfig.transform,
    '^.+\\.tsx?$': [
      'ts-jest',
      {
        // the build's options, as CommonJS for jest; test files are excluded from the build, not from this
        tsconfig: { ...compilerOptions, module: 'commonjs', incremental: false, declaration: false }
      }
    ]
  },
  transformIgnorePatterns: [`/node_modules/(?!${esModules}).+`]
};
