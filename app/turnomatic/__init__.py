"""turnomatic: GET /turno/<id> answers the next number of that id."""

import os

from flask import Flask

from . import config, metrics, store, tracing, web


def create_app(settings=None):
    """The Flask app. Settings come from the TURNOMATIC_* environment, then `settings`
    (upper-case names: STORE, STATSD, STATSD_PREFIX...)."""
    app = Flask(__name__)
    settings = settings or {}
    # Only the variables of settings not given: `turnomatic serve --port 7017` starts
    # whatever TURNOMATIC_PORT holds.
    app.config.from_mapping({
        setting.name.upper(): setting.from_environ(os.environ)
        for setting in config.SETTINGS if setting.name.upper() not in settings
    })
    app.config.from_mapping(settings)
    # OPTIONS answered by Flask would not be JSON; //turno/x redirected would be a surprise.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.merge_slashes = False
    app.extensions["store"] = store.open_store(app.config["STORE"])
    metrics.init_app(app)
    tracing.init_app(app)
    app.register_blueprint(web.bp)
    return app
