"""The reports of a results folder: the numbers as Markdown, one self-contained HTML page."""
