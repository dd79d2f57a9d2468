"""turnomatic: GET /turno/<id> answers the next number of that id."""

from flask import Flask

from . import config, metrics, store, tracing, web


def create_app(settings=None):
    """The Flask app. Settings come from the TURNOMATIC_* environment, then `settings`
    (upper-case names: STORE, STATSD, STATSD_PREFIX...)."""
    app = Flask(__name__)
    app.config.from_mapping({name.upper(): value for name, value in config.from_environ().items()})
    if settings:
        app.config.from_mapping(settings)
    # OPTIONS answered by Flask would not be JSON; //turno/x redirected would be a surprise.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.merge_slashes = False
    app.extensions["store"] = store.open_store(app.config["STORE"])
    metrics.init_app(app)
    tracing.init_app(app)
    app.register_blueprint(web.bp)
    return app
