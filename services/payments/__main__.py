"""``python -m services.payments``"""

from services.common.app import run
from services.payments.app import build
from services.payments.settings import PaymentsSettings

run(build, PaymentsSettings)
