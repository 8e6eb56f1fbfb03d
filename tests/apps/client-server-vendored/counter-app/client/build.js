// Copies src/ to dist/: the client's whole build, no dependencies.
const fs = require('fs');
const path = require('path');
const out = path.join(__dirname, 'dist');
fs.mkdirSync(out, { recursive: true });
for (const name of fs.readdirSync(path.join(__dirname, 'src'))) {
  fs.copyFileSync(path.join(__dirname, 'src', name), path.join(out, name));
}
