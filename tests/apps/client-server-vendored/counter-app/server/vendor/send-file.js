// Vendored helper: serve one file from a folder (no registry dependency).
const fs = require('fs');
const path = require('path');
const TYPES = { '.html': 'text/html', '.js': 'text/javascript' };
module.exports = function sendFile(root, urlPath, res) {
  const name = path.normalize(urlPath === '/' ? '/index.html' : urlPath).replace(/^([.][.][/\\])+/, '');
  const file = path.join(root, name);
  if (!file.startsWith(root)) { res.writeHead(403); return res.end(); }
  fs.readFile(file, (err, data) => {
    if (err) { res.writeHead(404); return res.end('not found'); }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream' });
    res.end(data);
  });
};
