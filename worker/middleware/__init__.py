"""Hooks around every job task (see tasks/middleware.py); one concern per module."""
