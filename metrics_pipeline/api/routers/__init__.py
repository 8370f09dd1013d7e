"""One APIRouter per area; ``api/app.py`` includes each with one ``app.include_router`` line."""
