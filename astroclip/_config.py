"""Package-wide configuration (astropy configuration system)."""

from astropy import config as _config

__all__ = ["conf"]


class Conf(_config.ConfigNamespace):
    """Configuration parameters for `astroclip`."""

    default_model = _config.ConfigItem(
        "astroclip-released", "Name of the model used when ``model=None``.")
    device = _config.ConfigItem(
        "auto", "Default torch device: 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda'...")
    batch_size = _config.ConfigItem(256, "Default batch size of embedding functions.")
    progress = _config.ConfigItem(True, "Show tqdm progress bars on long work.")
    lightning_messages = _config.ConfigItem(
        False, "Show Lightning's own banners, tips and expected warnings during training.")


conf = Conf()
