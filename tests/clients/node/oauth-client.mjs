// A standard OAuth 2.0 client (openid-client v6, unmodified) that the Python tests drive as a
// subprocess. Every command prints one JSON object per line on stdout; the last line is the
// outcome. An error is {"error": ..., "error_description": ..., "status": ...}: the server's
// RFC 6749 §5.2 error when it answered one, else the client's own ("client_error", with the
// library's code and message), and the exit status is then 1.
//
// Commands (argv):
//   discover ISSUER CLIENT_ID
//       prints the metadata the client discovered (RFC 8414) and accepted.
//   device ISSUER CLIENT_ID SCOPE
//       RFC 8628: prints {user_code, verification_uri, verification_uri_complete, interval,
//       expires_in}, then polls the token endpoint until the grant ends; prints its tokens.
//   authorize-url ISSUER CLIENT_ID REDIRECT_URI SCOPE
//       RFC 6749 §4.1 with RFC 7636 (S256): prints {url, code_verifier, state}.
//   exchange ISSUER CLIENT_ID CALLBACK_URL CODE_VERIFIER STATE
//       checks the authorization response (state, RFC 9207 iss) and redeems its code.
//   refresh ISSUER CLIENT_ID REFRESH_TOKEN
//   revoke ISSUER CLIENT_ID TOKEN HINT        (RFC 7009; prints {revoked: true})
//
// The issuer's metadata is discovered as RFC 8414 says (algorithm "oauth2"); the client is
// public (token_endpoint_auth_method "none"), and plain http is allowed because the tests'
// servers listen on loopback.
import * as client from 'openid-client';

function print(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

async function configure(issuer, clientId) {
  return client.discovery(new URL(issuer), clientId, undefined, client.None(), {
    algorithm: 'oauth2',
    execute: [client.allowInsecureRequests],
  });
}

const commands = {
  async discover(issuer, clientId) {
    return (await configure(issuer, clientId)).serverMetadata();
  },

  async device(issuer, clientId, scope) {
    const config = await configure(issuer, clientId);
    const started = await client.initiateDeviceAuthorization(config, { scope });
    const { user_code, verification_uri, verification_uri_complete, interval, expires_in } =
      started;
    print({ user_code, verification_uri, verification_uri_complete, interval, expires_in });
    return { ...(await client.pollDeviceAuthorizationGrant(config, started)) };
  },

  async 'authorize-url'(issuer, clientId, redirectUri, scope) {
    const config = await configure(issuer, clientId);
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope,
      state,
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
    });
    return { url: url.href, code_verifier: codeVerifier, state };
  },

  async exchange(issuer, clientId, callbackUrl, codeVerifier, state) {
    const config = await configure(issuer, clientId);
    return {
      ...(await client.authorizationCodeGrant(config, new URL(callbackUrl), {
        pkceCodeVerifier: codeVerifier,
        expectedState: state,
      })),
    };
  },

  async refresh(issuer, clientId, refreshToken) {
    const config = await configure(issuer, clientId);
    return { ...(await client.refreshTokenGrant(config, refreshToken)) };
  },

  async revoke(issuer, clientId, token, hint) {
    const config = await configure(issuer, clientId);
    await client.tokenRevocation(config, token, { token_type_hint: hint });
    return { revoked: true };
  },
};

function describe(error) {
  if (error instanceof client.ResponseBodyError) {
    return {
      error: error.error,
      error_description: error.error_description,
      status: error.status,
    };
  }
  const cause = error.cause instanceof Error ? error.cause.message : undefined;
  return { error: 'client_error', code: error.code, message: error.message, cause };
}

const [command, ...args] = process.argv.slice(2);
const run = commands[command];
if (run === undefined) {
  print({ error: 'usage', message: `unknown command ${command}` });
  process.exit(2);
}
try {
  print(await run(...args));
} catch (error) {
  print(describe(error));
  process.exitCode = 1;
}
