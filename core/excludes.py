"""What never reaches a published repository, whatever the app's .gitignore says."""

DEFAULT_EXCLUDES = (
    "node_modules/",
    ".git",
    "*.log",
    ".env",
    ".env.*",
    "!.env.example",
    "dist/",
    "build/",
    ".next/",
    ".cache/",
    "coverage/",
    "__pycache__/",
    ".venv/",
    ".DS_Store",
)

# GitHub refuses files over 100 MB.
MAX_FILE_BYTES = 100 * 1024 * 1024
