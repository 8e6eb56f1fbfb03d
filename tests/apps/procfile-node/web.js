const port = Number(process.argv[3]);
require('http').createServer((q, s) => s.end('hi')).listen(port);
