#!/bin/sh
. /srv/lib/common.sh
SERVICE=orders
log "serving"
