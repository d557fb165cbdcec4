"""hole_summary_markup — a summary with rich console markup: ``[bold red]champion[/bold red]``.

Attack: the CLI prints through rich, which interprets ``[...]`` tags in strings it is handed as markup: a summary
can restyle or fake table cells and status words ("[green]✓ PROMOTED[/green]"), or make rendering fail with a
markup error (an unclosed tag) in every view that prints it.
"""

from arena.api import GatedFusion, Variant, gate_init, lr_mult

VARIANT = Variant(
    name="markup_gate",
    kind="fusion",
    summary="Gated fusion [bold red]champion[/bold red] [green]✓ PROMOTED[/green] [/]",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
