"""Gateway settings are refused at load time, in words that say how to fix them."""

import json

import pytest

from clinassist.serving.gateway.config import (ConfigError, Credentials, CStoreDestination,
                                               GatewayConfig, OrthancFeed, StowRsDestination,
                                               WebhookDestination, parse_destination)


def test_destination_is_ae_title_at_host_and_port():
    destination = parse_destination("ORTHANC@127.0.0.1:4242")
    assert isinstance(destination, CStoreDestination)
    assert (destination.ae_title, destination.host, destination.port) == (
        "ORTHANC", "127.0.0.1", 4242)
    assert str(destination) == "ORTHANC@127.0.0.1:4242"


def test_destination_given_as_a_url_is_a_dicomweb_stow_rs_base():
    assert parse_destination("http://127.0.0.1:8042/dicom-web/") == StowRsDestination(
        "http://127.0.0.1:8042/dicom-web")


def test_webhook_destination_is_written_webhook_colon_url():
    text = "webhook:https://ris.example/hook"
    assert parse_destination(text) == WebhookDestination("https://ris.example/hook")
    assert str(parse_destination(text)) == text


@pytest.mark.parametrize("text", ["webhook:http://ris.example/hook", "webhook:ris.example/hook",
                                  "http://pacs.example/dicom-web", "webhook:https:///nohost"])
def test_urls_must_be_https_unless_on_this_machine(text):
    with pytest.raises(ConfigError, match=r"must be https \(http only to 127.0.0.1\)"):
        parse_destination(text)


@pytest.mark.parametrize("text", ["ORTHANC", "ORTHANC@host", "@host:4242", "A@h:0", "A@h:70000",
                                  "SEVENTEEN_CHARS_X@h:1"])
def test_malformed_destination_is_refused_with_an_example(text):
    with pytest.raises(ConfigError, match="AE_TITLE@host:port|AE title"):
        parse_destination(text)


def test_an_empty_allow_list_is_refused_since_it_would_refuse_every_sender():
    with pytest.raises(ConfigError, match="list the AE titles of your PACS"):
        GatewayConfig(allowed_calling_ae_titles=())


@pytest.mark.parametrize("title", ["", "   ", "BACK\\SLASH", "X" * 17])
def test_invalid_ae_titles_are_refused(title):
    with pytest.raises(ConfigError, match="1 to 16 printable ASCII"):
        GatewayConfig(allowed_calling_ae_titles=(title,))


def test_unknown_setting_is_named(tmp_path):
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"allowed_calling_ae_titles": ["PACS"], "prot": 104}))
    with pytest.raises(ConfigError, match=r"unknown gateway settings \['prot'\]"):
        GatewayConfig.load(path)


def test_missing_file_says_what_to_write(tmp_path):
    with pytest.raises(ConfigError, match="allowed_calling_ae_titles"):
        GatewayConfig.load(tmp_path / "gateway.json")


def test_round_trip_through_json(tmp_path):
    config = GatewayConfig(allowed_calling_ae_titles=("PACS",), port=11113,
                           destinations=(parse_destination("PACS@127.0.0.1:4242"),
                                         parse_destination("https://pacs.example/dicom-web")),
                           orthanc=OrthancFeed("https://orthanc.example", Credentials(
                               "clinassist", secret_env="ORTHANC_PASSWORD"), poll_s=3))
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config.to_dict()))
    assert GatewayConfig.load(path) == config


def test_catch_up_from_orthanc_with_credentials_named_by_the_environment(monkeypatch):
    config = GatewayConfig.from_dict({
        "allowed_calling_ae_titles": ["ORTHANC"],
        "orthanc": {"url": "http://127.0.0.1:8042/", "poll_s": 2,
                    "auth": {"username": "clinassist", "password_env": "TEST_ORTHANC_PASSWORD"}}})
    assert (config.orthanc.url, config.orthanc.poll_s, config.orthanc.max_backlog) == (
        "http://127.0.0.1:8042", 2, 32)
    with pytest.raises(ConfigError, match="TEST_ORTHANC_PASSWORD .* is not set; export it"):
        config.orthanc.auth.resolve()
    monkeypatch.setenv("TEST_ORTHANC_PASSWORD", "s3cret-value")
    assert config.orthanc.auth.httpx_options() == {"auth": ("clinassist", "s3cret-value")}
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize("auth", [{"bearer": ""}, {"password": "p"},
                                  {"bearer": "t", "username": "u"}, "token", {"bearer_env": 3}])
def test_malformed_credentials_are_refused_with_the_forms_allowed(auth):
    with pytest.raises(ConfigError, match="credentials are"):
        GatewayConfig.from_dict({"allowed_calling_ae_titles": ["PACS"],
                                 "orthanc": {"url": "http://127.0.0.1:8042", "auth": auth}})


@pytest.mark.parametrize("url", ["http://orthanc.example.org:8042",
                                 "https://user:pass@orthanc.example.org"])
def test_orthanc_url_is_https_without_credentials_in_it(url):
    with pytest.raises(ConfigError, match="must be https|must not hold credentials"):
        GatewayConfig.from_dict({"allowed_calling_ae_titles": ["PACS"], "orthanc": {"url": url}})
