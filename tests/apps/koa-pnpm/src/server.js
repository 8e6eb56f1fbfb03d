import Koa from 'koa';
const app = new Koa();
app.use((ctx) => { ctx.body = 'hi'; });
app.listen(process.env.PORT ?? 5000);
