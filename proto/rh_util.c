/* see rh_util.h */
