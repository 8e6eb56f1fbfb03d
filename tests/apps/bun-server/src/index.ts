import { Hono } from 'hono';
const app = new Hono();
app.get('/', (c) => c.text('hi'));
Bun.serve({ port: process.env.PORT || 3000, fetch: app.fetch });
// server.listen( is not used; Bun.serve listens
