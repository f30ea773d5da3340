"""`oneoff completion bash|zsh|fish`: shell completion generated from the parser itself.

Generated, not hand-written, so a new command or option completes as soon as it exists
(tests/test_completion.py drives each shell). The scripts only complete command and
option names: values (task names, environments) would need oneoff.toml read on every Tab.
"""

from __future__ import annotations

import argparse
import shlex

__all__ = ["cmd_completion", "script"]


def _tree(
    parser: argparse.ArgumentParser, path: tuple[str, ...], out: dict[tuple[str, ...], Node]
) -> None:
    node = Node()
    out[path] = node
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                node.commands[name] = helps.get(name, "")
                _tree(sub, (*path, name), out)
        elif action.option_strings:
            node.options.append(
                (tuple(action.option_strings), action.help or "", action.nargs != 0)
            )


class Node:
    """One command level: its subcommands (name -> help) and options."""

    def __init__(self) -> None:
        self.commands: dict[str, str] = {}
        self.options: list[tuple[tuple[str, ...], str, bool]] = []  # names, help, takes value

    def words(self) -> list[str]:
        return [*self.commands, *(name for names, _, _ in self.options for name in names)]


def _key(path: tuple[str, ...]) -> str:
    return " ".join(("_", *path))


def _bash(tree: dict[tuple[str, ...], Node]) -> str:
    table = "\n".join(
        f"    [{shlex.quote(_key(path))}]={shlex.quote(' '.join(node.words()))}"
        for path, node in tree.items()
    )
    return f"""# oneoff bash completion: eval "$(oneoff completion bash)"
declare -gA _oneoff_words=(
{table}
)
_oneoff() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmdpath="_" word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        [[ $word == -* ]] && continue
        [[ -n "${{_oneoff_words["$cmdpath $word"]+set}}" ]] && cmdpath="$cmdpath $word"
    done
    COMPREPLY=($(compgen -W "${{_oneoff_words[$cmdpath]}}" -- "$cur"))
}}
complete -F _oneoff oneoff
"""


def _zsh(tree: dict[tuple[str, ...], Node]) -> str:
    table = "\n".join(
        f"    {shlex.quote(_key(path))} {shlex.quote(' '.join(node.words()))}"
        for path, node in tree.items()
    )
    return f"""#compdef oneoff
# oneoff zsh completion: eval "$(oneoff completion zsh)" (after compinit)
typeset -gA _oneoff_words
_oneoff_words=(
{table}
)
_oneoff() {{
    local cmdpath="_" word
    for word in ${{words[2,CURRENT-1]}}; do
        [[ $word == -* ]] && continue
        (( ${{+_oneoff_words[$cmdpath $word]}} )) && cmdpath="$cmdpath $word"
    done
    compadd -- ${{=_oneoff_words[$cmdpath]}}
}}
compdef _oneoff oneoff
"""


def _fish(tree: dict[tuple[str, ...], Node]) -> str:
    lines = ["# oneoff fish completion: oneoff completion fish | source", "complete -c oneoff -f"]
    for path, node in tree.items():
        children = " ".join(node.commands)
        if not path:
            here = "__fish_use_subcommand"
        else:
            here = f"__fish_seen_subcommand_from {path[-1]}"
            if children:
                here += f"; and not __fish_seen_subcommand_from {children}"
        for name, text in node.commands.items():
            lines.append(
                f"complete -c oneoff -n {shlex.quote(here)} -a {name} -d {shlex.quote(text)}"
            )
        scope = "__fish_use_subcommand" if not path else f"__fish_seen_subcommand_from {path[-1]}"
        for names, text, takes_value in node.options:
            flags = " ".join(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}" for n in names)
            value = " -r" if takes_value else ""
            lines.append(
                f"complete -c oneoff -n {shlex.quote(scope)} {flags}{value} -d {shlex.quote(text)}"
            )
    return "\n".join(lines) + "\n"


def script(shell: str) -> str:
    """The completion script for ``shell`` (bash, zsh or fish)."""
    from oneoff.cli._parser import build_parser

    tree: dict[tuple[str, ...], Node] = {}
    _tree(build_parser(), (), tree)
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](tree)


def cmd_completion(args: argparse.Namespace) -> int:
    import sys

    sys.stdout.write(script(args.shell))
    return 0
