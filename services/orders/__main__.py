"""``python -m services.orders``"""

from services.common.app import run
from services.orders.app import build
from services.orders.settings import OrdersSettings

run(build, OrdersSettings)
