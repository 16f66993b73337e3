#!/usr/bin/env python3
"""Regenerates guide/src/cli-reference.md from `adora <command> --help` (run after changing flags):

    cargo build -p adora-cli && python3 scripts/cli-reference.py
"""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADORA = os.path.join(ROOT, "target", "debug", "adora")
ENV = {"NO_COLOR": "1", "COLUMNS": "100", "PATH": "/usr/bin:/bin"}


def help_text(path):
    return subprocess.run([ADORA, *path, "--help"], capture_output=True, text=True, env=ENV, check=True).stdout


def subcommands(path):
    out = help_text(path)
    if "\nCommands:\n" not in out:
        return []
    section = out.split("\nCommands:\n")[1].split("\n\n")[0]
    names = [l.split()[0] for l in section.splitlines() if l.startswith("  ") and not l.startswith("   ")]
    return [n for n in names if n != "help"]


def main():
    parts = [
        "# CLI reference\n",
        "Every `adora` command with every flag, as printed by `adora <command> --help`. Each command also\n"
        "accepts `-v`/`-vv` (more log output) and `--help`; `adora --version` prints the version.\n"
        "Shell completions: `adora completion bash|zsh|fish` (see below).\n",
    ]

    def walk(path):
        if path:
            level = "#" * min(len(path) + 1, 4)
            parts.append(f"\n{level} `adora {' '.join(path)}`\n\n```text\n{help_text(path).rstrip()}\n```\n")
        for name in subcommands(path):
            walk(path + [name])

    walk([])
    with open(os.path.join(ROOT, "guide", "src", "cli-reference.md"), "w") as f:
        f.write("".join(parts))


if __name__ == "__main__":
    main()
