const fastify = require('fastify')();
fastify.get('/', async () => ({ hello: 'world' }));
fastify.listen({ port: 4000, host: '0.0.0.0' });
