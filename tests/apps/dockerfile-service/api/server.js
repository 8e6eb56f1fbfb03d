require('http').createServer((q, s) => s.end('hi')).listen(7000);
