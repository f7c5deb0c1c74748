"""Dashboard pages: one module a page, each with `register()`; `ui.pages.registry` is the one
list of them that `ui.main` serves."""
