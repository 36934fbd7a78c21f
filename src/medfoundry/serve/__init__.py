"""``medfoundry serve``: a web app to segment uploaded volumes and view them (NiiVue).

:func:`create_app` builds the FastAPI app over a :class:`ServeConfig`; :class:`TokenStore` holds
the users' token hashes. Uploads are checked by :mod:`medfoundry.serve.uploads`, jobs run in the
bounded queue of :mod:`medfoundry.serve.jobs`, and :mod:`medfoundry.serve.runner` does one job.
"""

from medfoundry.serve.app import ServeConfig, create_app
from medfoundry.serve.auth import TokenStore
from medfoundry.serve.uploads import UploadError, UploadLimits

__all__ = ["ServeConfig", "TokenStore", "UploadError", "UploadLimits", "create_app"]
