const http = require('http');
const path = require('path');
const sendFile = require('../vendor/send-file');

const PORT = process.env.PORT || 3001;
const CLIENT = path.join(__dirname, '../../client/dist');
let count = 0;

http
  .createServer((req, res) => {
    if (req.url === '/api/count') {
      count += 1;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify({ count }));
    }
    return sendFile(CLIENT, req.url, res);
  })
  .listen(PORT, '0.0.0.0', () => console.log(`counter on ${PORT}`));
