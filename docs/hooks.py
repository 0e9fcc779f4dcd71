"""MkDocs hook: the generated references, built from the code at every build.

- `<!-- gdfit:cli-reference -->` becomes every command's help, as `gdfit COMMAND --help` prints
  it, read from the Typer app (`typer.main.get_command`). mkdocs-click cannot read this app: the
  Typer release in use carries its own copy of Click, whose parameters are not `click.Option`s.
- `<!-- gdfit:config-reference -->` becomes the table of config keys from
  `gdfit.config.schema.schema_rows()`, the rows `gdfit config --schema` prints.
"""

from __future__ import annotations

CLI_MARKER = "<!-- gdfit:cli-reference -->"
CONFIG_MARKER = "<!-- gdfit:config-reference -->"
WIDTH = 100  # columns of the help text, as a terminal of that width shows it


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_table() -> str:
    from gdfit.config.schema import schema_rows

    lines = ["| key | default | valid values |", "| --- | --- | --- |"]
    for row in schema_rows():
        lines.append(f"| `{row['key']}` | `{_cell(row['default'])}` | {_cell(row['values'])} |")
    return "\n".join(lines)


def _help(command, name: str, parent=None) -> str:
    ctx = command.context_class(command, info_name=name, parent=parent, terminal_width=WIDTH,
                                max_content_width=WIDTH)
    return ctx, command.get_help(ctx)


def cli_reference() -> str:
    import typer

    from gdfit.cli.app import app

    root = typer.main.get_command(app)
    ctx, text = _help(root, "gdfit")
    parts = ["## gdfit", "", "```text", text, "```", ""]
    for name in root.list_commands(ctx):
        sub = root.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        _, sub_text = _help(sub, name, ctx)
        summary = (sub.help or "").strip().split("\n\n")[0].replace("\n", " ")
        parts += [f"## gdfit {name}", "", summary, "", "```text", sub_text, "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if CONFIG_MARKER in markdown:
        markdown = markdown.replace(CONFIG_MARKER, config_table())
    return markdown
