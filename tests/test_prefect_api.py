"""appgen.prefect_api: a failing Prefect API is named in one line, without its
credentials, and other services' errors are not blamed on it."""

from __future__ import annotations

import pytest

API = "http://appgen:hunter22@LocalHost:80/api/?key=s3cret"


def _from(url: str, status: int | None = None, body: object = None) -> Exception:
    """What Prefect's client raises for a request to ``url``: refused, or answered
    with ``status``."""
    import httpx

    request = httpx.Request("GET", url)
    if status is None:
        return httpx.ConnectError("[Errno 111] Connection refused", request=request)
    response = httpx.Response(status, json=body, request=request)
    return httpx.HTTPStatusError("error", request=request, response=response)


def _raised_from(cause: Exception) -> Exception:
    try:
        raise RuntimeError("Failed to reach API") from cause  # Prefect's version check
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (_from("http://localhost/api/flows/"), "cannot be reached ([Errno 111] Connection"),
        (_raised_from(_from("http://localhost/api/admin/version")), "cannot be reached ("),
        (_from("http://localhost/api/flows/", 503), "answered 503 Service Unavailable to GET"),
        (_from("http://localhost/api/flows/", 401), "PREFECT_API_KEY (or PREFECT_API_AUTH"),
        (_from("http://localhost/api/flows/", 422, {"detail": "bad name"}), "/flows/: bad name"),
    ],
)
def test_a_prefect_api_problem_names_the_api_without_its_credentials(error, said):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from appgen.prefect_api import prefect_api_problem

    with temporary_settings({PREFECT_API_URL: API}):
        problem = prefect_api_problem(error)
    assert problem is not None and problem.startswith("the Prefect API at http://localhost/api/ ")
    assert said in problem
    assert "hunter22" not in problem and "s3cret" not in problem
    assert ("start that server" in problem) == ("cannot be reached" in said or "503" in said)


@pytest.mark.parametrize(
    "error",
    [
        _from("http://localhost/api2/flows/"),  # another path of the same host
        _from("http://localhost:8080/api/flows/"),
        _from("https://api.github.com/repos/acme/app", 404),
        _raised_from(ValueError("not an API error")),
    ],
)
def test_errors_of_other_services_are_not_blamed_on_the_prefect_api(error):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from appgen.prefect_api import prefect_api_problem

    with temporary_settings({PREFECT_API_URL: API}):
        assert prefect_api_problem(error) is None
