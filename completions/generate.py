#!/usr/bin/env python3
"""Write the shell completion scripts of ``shrike`` and ``oam-docker-ipam`` next to this file.

    python3 completions/generate.py           # (re)write them
    python3 completions/generate.py --check   # exit 1, with a diff, if one is out of date

Each script starts from what the program itself prints for ``_SHRIKE_COMPLETE=source_SHELL``
(Typer spells the instruction first), the text ``--show-completion`` shows. The scripts
list no command or option: at each TAB they call the program back
(``_SHRIKE_COMPLETE=complete_SHELL``), which answers from the CLI as installed. So they
change only with Typer; tests/test_completions.py fails while a committed one differs.

Three fixes are applied to Typer's text; each fails loudly here once Typer changes the
text it applies to, so that it is looked at again:

- blank lines around the script are dropped: zsh honours ``#compdef`` only on the
  first line of a file in ``$fpath``;
- bash: Typer hands the program ``${COMP_WORDS[*]}``, words bash also splits at ``=``
  and ``:``, so ``--cluster-store=http://10.0.0.5:2379`` arrives as five words and the
  rest of the line is misread. The program gets the line up to the cursor instead,
  which it splits as a shell would, with the index of its last word. And since bash
  replaces only the part of the word after its last ``:``, the offers for a word that
  holds one (an IPv6 address) lose what was typed up to there;
- zsh: Typer's script only registers its function with ``compdef``. Autoloaded from
  ``$fpath``, the file is the body of ``_shrike``, run at each TAB, so the first TAB
  would only register it and complete nothing. It completes when run as a function,
  and registers itself only when sourced. (click's own script, which checks for
  ``loadautofunc`` alone, completes nothing at the second TAB.)
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROGRAMS = ("shrike", "oam-docker-ipam")
SHELLS = ("bash", "zsh", "fish")

BASH_TYPER_WORDS = """\
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \\
                   COMP_CWORD=$COMP_CWORD \\
"""
BASH_LINE_WORDS = """\
    local line=${COMP_LINE:0:COMP_POINT} words
    IFS=$' \\t' read -ra words <<< "$line"
    local cword=${#words[@]}
    [[ $line == *[[:space:]] ]] || cword=$((cword - 1))
    COMPREPLY=( $( env COMP_WORDS="$line" \\
                   COMP_CWORD=$cword \\
"""
BASH_RETURN = """\
    return 0
}
"""
BASH_TRIM_AND_RETURN = """\
    local typed=${line##*[[:space:]]}
    typed=${typed##*=}
    if [[ $typed == *:* && $COMP_WORDBREAKS == *:* ]]; then
        typed=${typed%"${typed##*:}"}
        COMPREPLY=( "${COMPREPLY[@]#"$typed"}" )
    fi
    return 0
}
"""
ZSH_REGISTER = "compdef {function} {program}\n"
ZSH_REGISTER_OR_COMPLETE = """\
if [[ $zsh_eval_context[-1] == (loadautofunc|shfunc) ]]; then
    # autoloaded from $fpath: this file is the body of _{program}, run at each TAB
    {function} "$@"
else
    # sourced, e.g. from ~/.zshrc after compinit
    compdef {function} {program}
fi
"""


def complete_var(program: str) -> str:
    """The environment variable the program reads: ``_SHRIKE_COMPLETE``, ``_OAM_DOCKER_IPAM_COMPLETE``."""
    return "_{}_COMPLETE".format(program.replace("-", "_").upper())


def typer_script(program: str, shell: str) -> str:
    """What ``program`` prints for ``source_SHELL``, run from this checkout."""
    env = {**os.environ, complete_var(program): f"source_{shell}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    return subprocess.run(
        # prog_name: what the console script of that name is called, whatever argv[0] is here
        [sys.executable, "-c", f"from shrike_cli.cli import app; app(prog_name={program!r})"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    ).stdout


def script(program: str, shell: str) -> str:
    """The completion script of ``program`` for ``shell``, as it is committed."""
    text = typer_script(program, shell).strip() + "\n"
    if shell == "bash":
        text = _replace_once(text, BASH_TYPER_WORDS, BASH_LINE_WORDS)
        text = _replace_once(text, BASH_RETURN, BASH_TRIM_AND_RETURN)
    elif shell == "zsh":
        names = {"function": "_{}_completion".format(program.replace("-", "_")), "program": program}
        text = _replace_once(text, ZSH_REGISTER.format(**names), ZSH_REGISTER_OR_COMPLETE.format(**names))
    return text


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"Typer's completion script changed: {old!r} is not in it once; review the fix")
    return text.replace(old, new)


def path_of(program: str, shell: str) -> Path:
    return HERE / f"{program}.{shell}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; fail if a script is out of date")
    args = parser.parse_args()
    stale = 0
    for program in PROGRAMS:
        for shell in SHELLS:
            path, wanted = path_of(program, shell), script(program, shell)
            current = path.read_text() if path.exists() else ""
            if current == wanted:
                continue
            if args.check:
                stale += 1
                diff = difflib.unified_diff(
                    current.splitlines(keepends=True), wanted.splitlines(keepends=True), str(path), "generated"
                )
                sys.stdout.writelines(diff)
            else:
                path.write_text(wanted)
                print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"{stale} completion scripts are out of date: run python3 completions/generate.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
