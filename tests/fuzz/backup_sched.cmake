# Names in the scheduled backups' directory (server/backup_sched.h), which retention deletes by
# (see CMakeLists.txt beside this file for the convention).
gantry_fuzzer(backup_name gantry_daemon)
