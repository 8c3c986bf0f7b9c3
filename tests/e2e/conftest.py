"""End-to-end tests use the bot's local Bot API and the agent's process fixtures."""

from tests.agent.conftest import start_agent
from tests.bot.conftest import tg

__all__ = ["start_agent", "tg"]
