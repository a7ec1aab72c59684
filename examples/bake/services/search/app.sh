#!/bin/sh
. /srv/lib/common.sh
SERVICE=search
log "serving"
