/** The env files the service scripts write (scripts/services.sh, scripts/hub.sh): `export KEY=VALUE` lines. */
const fs = require('fs');

/** The file's settings, or null when it does not exist (the service was never started). */
function readEnv(file) {
  if (!fs.existsSync(file)) {
    return null;
  }
  const env = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const found = /^export ([A-Za-z_][A-Za-z0-9_]*)="?([^"]*)"?$/.exec(line.trim());
    if (found) {
      env[found[1]] = found[2];
    }
  }
  return env;
}

module.exports = { readEnv };
