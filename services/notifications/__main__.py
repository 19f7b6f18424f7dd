"""``python -m services.notifications``"""

from services.common.app import run
from services.notifications.app import build
from services.notifications.settings import NotificationsSettings

run(build, NotificationsSettings)
