fetch('/api/count').then((r) => r.json()).then(console.log);
