"""The offline ``template`` agent: a small, real Express app shaped by the prompt.

The same prompt always gives the same files, byte for byte. The app serves a static
client from ``public/`` and a JSON API of items the prompt is about; ``npm install &&
npm start`` runs it on ``$PORT`` (3000 by default).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

_STOP_WORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "me",
        "us",
        "my",
        "build",
        "make",
        "create",
        "write",
        "generate",
        "please",
        "i",
        "want",
        "app",
    }
)


def app_title(prompt: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z0-9]+", prompt) if w.lower() not in _STOP_WORDS]
    return " ".join(w.capitalize() for w in words[:5]) or "Generated App"


def package_name(prompt: str) -> str:
    return "-".join(app_title(prompt).lower().split()) or "generated-app"


def files_for(prompt: str) -> dict[str, str]:
    """The app's files, relative path → text."""
    title = app_title(prompt)
    name = package_name(prompt)
    package = {
        "name": name,
        "version": "0.1.0",
        "private": True,
        "description": prompt.strip().splitlines()[0][:200] if prompt.strip() else title,
        "main": "server.js",
        "scripts": {"start": "node server.js", "test": "node --test"},
        "engines": {"node": ">=18"},
        "dependencies": {"express": "^4.21.2"},
    }
    return {
        "package.json": json.dumps(package, indent=2) + "\n",
        "server.js": _SERVER.replace("__TITLE_JSON__", json.dumps(title)),
        "public/index.html": _INDEX.replace("__TITLE__", html.escape(title)).replace(
            "__PROMPT__", html.escape(prompt.strip())
        ),
        "public/app.js": _CLIENT,
        "public/styles.css": _STYLES,
        "test/api.test.js": _TEST,
        "README.md": f"# {title}\n\n> {prompt.strip()}\n\n{_README_BODY}",
        ".gitignore": "node_modules/\n*.log\n.env\n",
        ".env.example": "PORT=3000\n",
    }


def write_app(prompt: str, app_dir: Path) -> list[str]:
    """Write the app into app_dir and return the relative paths written."""
    written = []
    for relative, text in files_for(prompt).items():
        path = app_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(relative)
    return written


_SERVER = """\
const express = require('express');
const path = require('path');

const TITLE = __TITLE_JSON__;
const PORT = Number(process.env.PORT || 3000);

function createApp() {
  const app = express();
  const items = [];
  let nextId = 1;

  app.use(express.json());
  app.use(express.static(path.join(__dirname, 'public')));

  app.get('/healthz', (req, res) => res.json({ ok: true }));
  app.get('/api/info', (req, res) => res.json({ title: TITLE }));
  app.get('/api/items', (req, res) => res.json(items));
  app.post('/api/items', (req, res) => {
    const text = String((req.body && req.body.text) || '').trim();
    if (!text) return res.status(400).json({ error: 'text is required' });
    const item = { id: nextId++, text, done: false };
    items.push(item);
    res.status(201).json(item);
  });
  app.patch('/api/items/:id', (req, res) => {
    const item = items.find((it) => it.id === Number(req.params.id));
    if (!item) return res.status(404).json({ error: 'not found' });
    item.done = Boolean(req.body && req.body.done);
    res.json(item);
  });
  app.delete('/api/items/:id', (req, res) => {
    const index = items.findIndex((it) => it.id === Number(req.params.id));
    if (index === -1) return res.status(404).json({ error: 'not found' });
    items.splice(index, 1);
    res.status(204).end();
  });
  return app;
}

if (require.main === module) {
  createApp().listen(PORT, '0.0.0.0', () => console.log(`${TITLE} listening on :${PORT}`));
}

module.exports = { createApp };
"""

_INDEX = """\
<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>__TITLE__</title>
    <link rel="stylesheet" href="styles.css">
  </head>
  <body>
    <main>
      <h1>__TITLE__</h1>
      <p class="prompt">__PROMPT__</p>
      <form id="add">
        <input id="text" placeholder="Add an item" autocomplete="off" required>
        <button>Add</button>
      </form>
      <ul id="items"></ul>
    </main>
    <script src="app.js"></script>
  </body>
</html>
"""

_CLIENT = """\
const list = document.getElementById('items');
const form = document.getElementById('add');
const input = document.getElementById('text');

async function refresh() {
  const items = await (await fetch('/api/items')).json();
  list.replaceChildren(...items.map(render));
}

function render(item) {
  const li = document.createElement('li');
  const box = document.createElement('input');
  box.type = 'checkbox';
  box.checked = item.done;
  box.onchange = () => send('PATCH', item.id, { done: box.checked });
  const label = document.createElement('span');
  label.textContent = item.text;
  const remove = document.createElement('button');
  remove.textContent = 'Remove';
  remove.onclick = () => send('DELETE', item.id);
  li.append(box, label, remove);
  return li;
}

async function send(method, id, body) {
  await fetch(`/api/items/${id}`, {
    method,
    headers: { 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  refresh();
}

form.onsubmit = async (event) => {
  event.preventDefault();
  await fetch('/api/items', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ text: input.value }),
  });
  input.value = '';
  refresh();
};

refresh();
"""

_STYLES = """\
body { font-family: system-ui, sans-serif; background: #f6f7f9; margin: 0; }
main { max-width: 36rem; margin: 3rem auto; padding: 0 1rem; }
.prompt { color: #555; }
form { display: flex; gap: .5rem; }
input#text { flex: 1; padding: .5rem; }
ul { list-style: none; padding: 0; }
li { display: flex; align-items: center; gap: .5rem; padding: .4rem 0; }
li span { flex: 1; }
"""

_TEST = """\
const test = require('node:test');
const assert = require('node:assert');
const { createApp } = require('../server');

test('items can be added and listed', async () => {
  const server = createApp().listen(0);
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    const created = await fetch(`${base}/api/items`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ text: 'first' }),
    });
    assert.strictEqual(created.status, 201);
    const items = await (await fetch(`${base}/api/items`)).json();
    assert.deepStrictEqual(items.map((it) => it.text), ['first']);
  } finally {
    server.close();
  }
});
"""

_README_BODY = """\
## Run it

```sh
npm install
npm start        # http://localhost:3000
npm test
```

The server (`server.js`) serves the client in `public/` and a JSON API:
`GET/POST /api/items`, `PATCH/DELETE /api/items/:id`, `GET /healthz`.
"""
