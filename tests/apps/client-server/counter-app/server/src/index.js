const express = require('express');
const path = require('path');
const app = express();
const PORT = process.env.PORT || 3001;
app.use(express.static(path.join(__dirname, '../../client/dist')));
app.get('/api/count', (req, res) => res.json({ count: 0 }));
app.listen(PORT);
