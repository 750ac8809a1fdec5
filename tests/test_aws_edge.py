"""deploy/aws/edge.yaml: cfn-lint finds nothing, and the template says what docs/deploy.md says.

The template is read with cfn-lint's own loader (``cfnlint.decode.cfn_yaml.load``), which turns
the short tags (``!Ref``, ``!Sub``, ``!GetAtt``) into their ``{"Ref": ...}`` forms.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "aws" / "edge.yaml"
QUERIES = ROOT / "docs" / "queries.md"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"

MANAGED_GROUPS = {
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
}
# The methods throttled on their own, as (path, method): the costly or abusable ones.
STRICT_METHODS = [
    ("/v1/auth/login", "POST"),
    ("/oauth2/token", "POST"),
    ("/oauth2/device_authorization", "POST"),
]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = load(str(TEMPLATE))
    return loaded


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The template's resources of one ``Type``, by logical id."""
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def default_of(template: dict[str, Any], value: Any) -> Any:
    """``value``, or the default of the parameter it ``Ref``s."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return template["Parameters"][value["Ref"]]["Default"]
    return value


def resource_paths(template: dict[str, Any]) -> dict[str, str]:
    """Each API Gateway resource's logical id to its full path (``/v1/auth/login``)."""
    resources = resources_of_type(template, "AWS::ApiGateway::Resource")

    def path_of(name: str) -> str:
        properties = resources[name]["Properties"]
        parent = properties["ParentId"]
        prefix = "" if "Fn::GetAtt" in parent else path_of(parent["Ref"])
        return f"{prefix}/{properties['PathPart']}"

    return {name: path_of(name) for name in resources}


def test_cfn_lint_reports_nothing() -> None:
    # Informational findings too: the template has none, and an ignore must be written (and
    # justified) in its Metadata rather than appear here.
    result = subprocess.run(  # noqa: S603 - cfn-lint on our own file
        [str(CFN_LINT), "--include-checks", "I", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.security(stride="D", asvs=("V2.4",))
def test_strict_methods_are_modelled_and_throttled_far_below_the_stage_default(
    template: dict[str, Any],
) -> None:
    (stage,) = resources_of_type(template, "AWS::ApiGateway::Stage").values()
    settings = {
        (entry["ResourcePath"], entry["HttpMethod"]): entry
        for entry in stage["Properties"]["MethodSettings"]
    }
    default = settings["/*", "*"]
    default_rate = default_of(template, default["ThrottlingRateLimit"])
    default_burst = default_of(template, default["ThrottlingBurstLimit"])

    paths = resource_paths(template)
    methods = {
        (paths[method["Properties"]["ResourceId"]["Ref"]], method["Properties"]["HttpMethod"])
        for method in resources_of_type(template, "AWS::ApiGateway::Method").values()
    }
    for path, http_method in STRICT_METHODS:
        # A setting for a path the API lacks would silently apply to nothing.
        assert (path, http_method) in methods
        # MethodSettings write the path's slashes as "~1" after a leading "/" (JSON Pointer).
        entry = settings["/" + path.replace("/", "~1"), http_method]
        # "Much stricter": a tenth of the stage's rate and burst, or less.
        assert default_of(template, entry["ThrottlingRateLimit"]) * 10 <= default_rate
        assert default_of(template, entry["ThrottlingBurstLimit"]) * 10 <= default_burst


@pytest.mark.security(stride="DT", asvs=("V2.4", "V4.1"))
def test_web_acl_has_the_managed_groups_the_auth_rate_rule_and_the_size_rule(
    template: dict[str, Any],
) -> None:
    (acl,) = resources_of_type(template, "AWS::WAFv2::WebACL").values()
    properties = acl["Properties"]
    assert properties["Scope"] == "REGIONAL"
    rules = properties["Rules"]
    assert len({rule["Priority"] for rule in rules}) == len(rules)

    managed = {
        rule["Statement"]["ManagedRuleGroupStatement"]["Name"]: rule
        for rule in rules
        if "ManagedRuleGroupStatement" in rule["Statement"]
    }
    assert set(managed) == MANAGED_GROUPS
    # Enforced, not merely counted.
    assert all(rule["OverrideAction"] == {"None": {}} for rule in managed.values())

    (rate,) = [rule for rule in rules if "RateBasedStatement" in rule["Statement"]]
    assert "Block" in rate["Action"]
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement["AggregateKeyType"] == "IP"
    matches = statement["ScopeDownStatement"]["OrStatement"]["Statements"]
    assert all(match["ByteMatchStatement"]["FieldToMatch"] == {"UriPath": {}} for match in matches)
    assert {match["ByteMatchStatement"]["SearchString"] for match in matches} == {
        "/v1/auth/login",
        "/oauth2/token",
    }

    (size,) = [rule for rule in rules if "SizeConstraintStatement" in rule["Statement"]]
    assert "Block" in size["Action"]
    constraint = size["Statement"]["SizeConstraintStatement"]
    assert constraint["ComparisonOperator"] == "GT"
    assert constraint["Size"] == 64 * 1024
    # A body longer than WAF inspects is oversize: it must match (be refused), and WAF must
    # inspect the whole 64 KiB for the rule to see the API's limit at all.
    assert constraint["FieldToMatch"] == {"Body": {"OversizeHandling": "MATCH"}}
    inspection = properties["AssociationConfig"]["RequestBody"]["API_GATEWAY"]
    assert inspection["DefaultSizeInspectionLimit"] == "KB_64"


@pytest.mark.security(stride="I", asvs=("V16.2",))
def test_web_acl_is_associated_with_the_stage_and_logs_without_credentials(
    template: dict[str, Any],
) -> None:
    (acl_name,) = resources_of_type(template, "AWS::WAFv2::WebACL")
    (stage_name,) = resources_of_type(template, "AWS::ApiGateway::Stage")
    (association,) = resources_of_type(template, "AWS::WAFv2::WebACLAssociation").values()
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_name, "Arn"]}
    arn = association["Properties"]["ResourceArn"]["Fn::Sub"]
    assert arn.endswith(f"::/restapis/${{RestApi}}/stages/${{{stage_name}}}")

    (logging,) = resources_of_type(template, "AWS::WAFv2::LoggingConfiguration").values()
    assert logging["Properties"]["ResourceArn"] == {"Fn::GetAtt": [acl_name, "Arn"]}
    (destination,) = logging["Properties"]["LogDestinationConfigs"]
    group = template["Resources"][destination["Fn::Sub"].rsplit("${", 1)[1].rstrip("}")]
    assert group["Properties"]["LogGroupName"]["Fn::Sub"].startswith("aws-waf-logs-")
    redacted = logging["Properties"]["RedactedFields"]
    assert {"SingleHeader": {"Name": "authorization"}} in redacted
    assert {"SingleHeader": {"Name": "cookie"}} in redacted


def test_access_log_format_is_one_json_object_with_the_fields_docs_name(
    template: dict[str, Any],
) -> None:
    (stage,) = resources_of_type(template, "AWS::ApiGateway::Stage").values()
    log_format = stage["Properties"]["AccessLogSetting"]["Format"]
    # Each $context variable as API Gateway would fill it: quoted ones with text, bare ones
    # with a number.
    filled = re.sub(r"\$context\.[A-Za-z.]+", "0", log_format)
    entry = json.loads(filled)
    assert {
        "requestId",
        "ip",
        "httpMethod",
        "resourcePath",
        "status",
        "responseLength",
        "requestTime",
        "integrationLatency",
    } <= set(entry)


def insights_queries() -> list[str]:
    """The Logs Insights queries of docs/queries.md: its fenced blocks without a language."""
    queries, block, language = [], [], None
    for line in QUERIES.read_text(encoding="utf-8").splitlines():
        if not line.startswith("```"):
            block.append(line)
        elif language is None:  # an opening fence
            language, block = line[3:].strip(), []
        else:
            if not language:
                queries.append("\n".join(block).strip())
            language = None
    return queries


def test_one_query_definition_per_incident_query(template: dict[str, Any]) -> None:
    documented = insights_queries()
    assert len(documented) >= 4  # by user, 4xx in a window, slow endpoints, failed logins by IP
    definitions = resources_of_type(template, "AWS::Logs::QueryDefinition").values()
    saved = [definition["Properties"]["QueryString"].strip() for definition in definitions]
    assert sorted(saved) == sorted(documented)
    assert all(
        definition["Properties"]["LogGroupNames"] == [{"Ref": "ServiceLogGroupName"}]
        for definition in definitions
    )


@pytest.mark.security(stride="I", asvs=("V13.3",))
def test_no_account_id_in_the_template() -> None:
    # Twelve digits standing alone, as in an ARN (":123456789012:"); the twelve zeros ending an
    # example UUID are not one.
    assert re.findall(r"(?<![\w-])\d{12}(?![\w-])", TEMPLATE.read_text(encoding="utf-8")) == []
