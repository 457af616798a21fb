#pragma once
// Everything an integration test needs to run real processes.
#include "mosquitto.h"
#include "process.h"
#include "temp_dir.h"
