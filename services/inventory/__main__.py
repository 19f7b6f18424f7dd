"""``python -m services.inventory``"""

from services.common.app import run
from services.inventory.app import build
from services.inventory.settings import InventorySettings

run(build, InventorySettings)
