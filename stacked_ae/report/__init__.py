"""Reading a run folder and rendering it: statistics, sections, figures, Markdown and HTML, and the
side-by-side comparison of several runs.

Imports `core` and the run-folder readers (`report.rundata`); never the runner.
"""
