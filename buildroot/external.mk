include $(sort $(wildcard $(BR2_EXTERNAL_LIFEBOAT_PATH)/package/*/*.mk))
