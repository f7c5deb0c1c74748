"""The dashboard for people: NiceGUI pages (`ui.pages`), their widgets (`ui.video_widgets`,
`ui.alarm_banner`, `ui.auth_menu`), the shared frame (`ui.theme`), what a person does to an
alarm (`ui.alarm_actions`), and the app itself (`ui.main`: mounts `api.registry`, the pages and
the live models).

The top of the web stack (`tests/test_imports.py`): `ui/` imports `api/`, `auth/`, `live/`,
`storage/`, `ops/` and `core/`; nothing but `run.py` imports `ui/`.
"""
