const express = require('express');
const app = express();
app.listen(Number(process.env.PORT) || 8000);
