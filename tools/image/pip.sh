#!/bin/sh
# pip inside the image build (the build stage only). When the build is given a CA bundle as
# the secret pip-cert (make image PIP_CERT=FILE: a network whose TLS goes through a proxy with
# its own certificate authority), pip trusts it; the bundle is mounted for the one step and is
# never part of an image layer.
if [ -s /run/secrets/pip-cert ]; then
    export PIP_CERT=/run/secrets/pip-cert
fi
exec /opt/mriscribe/bin/pip "$@"
