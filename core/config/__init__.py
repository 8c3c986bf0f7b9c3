"""The clawops config: TOML validated into typed, frozen models (SPEC section 2)."""

from core.config._alerts import AlertRule, AlertsConfig, MaintenanceWindow
from core.config._changes import Change, ConfigChanges, config_changes, keep_running
from core.config._jobs import (
    CheckinConfig,
    ClawsBackupJob,
    ClawsConfig,
    ClawsHealthJob,
    ClawsPurgeJob,
    CommandJob,
    JobConfig,
    JobsConfig,
    LlmAccountConfig,
    MiniConfig,
    OrgConfig,
    ResourceConfig,
)
from core.config._load import ENV_VAR, LoadedConfig, find_config, load_config, parse_config
from core.config._models import (
    DatabaseConfig,
    MachineConfig,
    NodeConfig,
    PortRangeConfig,
    ServiceConfig,
    SidecarConfig,
    TelegramConfig,
)
from core.config._root import Config, default_config, startup_refusals

__all__ = [
    "ENV_VAR",
    "AlertRule",
    "AlertsConfig",
    "Change",
    "CheckinConfig",
    "ClawsBackupJob",
    "ClawsConfig",
    "ClawsHealthJob",
    "ClawsPurgeJob",
    "CommandJob",
    "Config",
    "ConfigChanges",
    "DatabaseConfig",
    "JobConfig",
    "JobsConfig",
    "LlmAccountConfig",
    "LoadedConfig",
    "MachineConfig",
    "MaintenanceWindow",
    "MiniConfig",
    "NodeConfig",
    "OrgConfig",
    "PortRangeConfig",
    "ResourceConfig",
    "ServiceConfig",
    "SidecarConfig",
    "TelegramConfig",
    "config_changes",
    "default_config",
    "find_config",
    "keep_running",
    "load_config",
    "parse_config",
    "startup_refusals",
]
