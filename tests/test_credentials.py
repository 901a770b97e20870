"""Credentials pasted into MLFLOW_TRACKING_URI never reach an output (resgan.tracking.move_credentials)."""

import pytest

from resgan.tracking import move_credentials


@pytest.mark.parametrize("uri, clean, user, password", [
    ("http://admin:s3cret@127.0.0.1:5000", "http://127.0.0.1:5000", "admin", "s3cret"),
    ("https://me:p%40ss%3Aw@mlflow.example.org/prefix/", "https://mlflow.example.org/prefix/",
     "me", "p@ss:w"),  # percent-encoded @ and : in the password
    ("http://only-user@host:5000", "http://host:5000", "only-user", None),
    ("http://a:b@c@host", "http://host", "a", "b@c"),  # the last @ ends the userinfo
    ("https://host:5000/path?x=1", "https://host:5000/path?x=1", None, None),
    ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db", None, None),
    ("databricks", "databricks", None, None),
])
def test_credentials_move_out_of_the_uri(uri, clean, user, password):
    env = {"MLFLOW_TRACKING_URI": uri}
    assert move_credentials(env) == (user is not None)
    assert env["MLFLOW_TRACKING_URI"] == clean
    assert env.get("MLFLOW_TRACKING_USERNAME") == user
    assert env.get("MLFLOW_TRACKING_PASSWORD") == password
    assert env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"


def test_variables_already_set_win_and_nothing_else_changes():
    env = {"MLFLOW_TRACKING_URI": "http://u:from-uri@h", "MLFLOW_TRACKING_PASSWORD": "from-env",
           "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false", "OTHER": "x"}
    assert move_credentials(env)
    assert env == {"MLFLOW_TRACKING_URI": "http://h", "MLFLOW_TRACKING_USERNAME": "u",
                   "MLFLOW_TRACKING_PASSWORD": "from-env",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false", "OTHER": "x"}
    assert not move_credentials({})  # no URI: the embedded store


@pytest.mark.parametrize("uri", ["http://u:SECRET/x@host", "http://u:SECRET?x@host",
                                 "http://u:SECRET#x@h"])
def test_an_unparseable_password_is_refused_without_repeating_it(uri):
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME") as err:
        move_credentials({"MLFLOW_TRACKING_URI": uri})
    assert "SECRET" not in str(err.value)


def test_fuzzed_uris_never_keep_a_password():
    """Random userinfo, hosts and paths: whatever the URI, the password is not in it after."""
    import random
    import string

    from urllib.parse import unquote

    rng = random.Random(0)
    refused = 0
    alphabet = string.ascii_letters + string.digits + "-._~!$&'()*+,;=%:@/?#[] "
    for _ in range(3000):
        password = "PW" + "".join(rng.choice(string.ascii_letters) for _ in range(10))
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        uri = f"{rng.choice(['http', 'https'])}://{junk.replace('@', '')}:{password}@h{rng.randrange(99)}:{rng.randrange(1, 65535)}/{junk}"
        env = {"MLFLOW_TRACKING_URI": uri}
        try:
            move_credentials(env)
        except ValueError as exc:  # refused: an '@' that is not a plain user:password@host
            assert password not in str(exc)
            refused += 1
            continue
        assert password not in env["MLFLOW_TRACKING_URI"], uri
        moved = env.get("MLFLOW_TRACKING_USERNAME", "") + ":" + env["MLFLOW_TRACKING_PASSWORD"]
        assert password in unquote(moved), uri
    assert 0 < refused < 3000 * 0.5  # mostly moved, a password with "/?#" refused
