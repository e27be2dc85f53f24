"""Database models and session helpers shared by the services."""
